from cnnzoo.utils.startup import quiet_interrupt

with quiet_interrupt():
    from cnnzoo.cli.app import main

main()
