"""The lab: production-like hosts on this machine (namespaces, sshd, nginx, a docker-compose app)."""
