from swiftkit.cli import main

main()
