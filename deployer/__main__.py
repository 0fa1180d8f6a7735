"""`python -m deployer deploy|destroy [options]`: what deploy.sh and destroy.sh run."""

from deployer.cli import entry_point

entry_point()
