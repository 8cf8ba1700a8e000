"""What happens on the operator's machine around a run: local hooks and webhooks, before and after."""
