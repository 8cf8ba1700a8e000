"""Renderers subscribe to engine events; none of them runs a command."""
