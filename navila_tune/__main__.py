from navila_tune.app import main

main()
