"""The deployer: deploy.sh and destroy.sh are its doors (`python -m deployer deploy|destroy`).

One module per concern: preflight, stacks, studies (dags/studies/ and each study's image),
images (the Windows builds), ami (the baked AMI), uploads, pause (pause and resume), destroy;
deploy wires them in order, cli parses the doors' options, console prints, aws holds the
clients and waits, engine reaches the engine's own catalog and capacity rule in dags/.
"""
