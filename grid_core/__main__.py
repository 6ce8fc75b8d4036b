from grid_core.cli import main

main()
