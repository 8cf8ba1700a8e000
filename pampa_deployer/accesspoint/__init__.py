"""The access point protocol as its clients speak it: the HTTP client, the gate rule and the wire codec of progress
events. The server that answers it is ``server/``."""
