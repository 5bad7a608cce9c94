"""The local cloud's node: one detached process per node that plays cloud-init, then sshd.

`python -m launchplan.providers.localnode NODE_DIR` detaches, applies NODE_DIR/userdata the way
cloud-init would (under NODE_DIR/root, never the machine's real /etc), then serves SSH (exec and
SFTP) with the node's own host key on the node's own loopback address. It reports what it is
doing in NODE_DIR/status.json and NODE_DIR/console.log. Only `procinfo` is light enough to be
imported by the provider; the rest is loaded by the node process alone.

Files in NODE_DIR: request.json and userdata (written by the provider), spawn.json (pid of the
detached node), status.json, console.log, home/ (login directory), root/ (the node's "/"),
scripts/ (user-data script parts).
"""
