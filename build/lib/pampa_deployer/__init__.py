"""Pampa Deployer: deploy a fleet of Pampa servers over SSH, with the kepler gate."""
__version__ = "0.1.0"
