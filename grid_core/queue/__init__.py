"""The lab's queue, without an engine: the job store on the head's disk (store.py), the order and
placement of waiting jobs (plan.py), and the words users type for them (words.py).

The grid service on the head is the one writer of the store and the one planner; the backend's
adapter (grid_plugin_ray_backend.jobs) turns a plan into runners and their reports into commits.
Everything here is plain Python that tests drive with records and a clock they control.
"""
