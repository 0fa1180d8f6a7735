"""The deployer: deploy.sh and destroy.sh are its doors (`python -m deployer deploy|destroy`).

One module per concern: preflight, stacks, images (the Windows build), ami (the baked AMI),
uploads, pause (pause and resume), destroy; deploy wires them in order, cli parses the doors'
options, console prints, aws holds the clients and waits.
"""
