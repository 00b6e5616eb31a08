from cnnzoo.cli import main

main()
