from digest.apps.cli import main

main()
