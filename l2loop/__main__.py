from l2loop.cli import main

main()
