from cnnzoo.startup import quiet_interrupt

with quiet_interrupt():
    from cnnzoo.cli import main

main()
