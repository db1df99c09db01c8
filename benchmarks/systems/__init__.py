"""The systems under test and the peers: the gateways, Pipecat, the benchmark stand-in.

``pipecat_peer/`` holds scripts that run in Pipecat's own virtualenv (.bench/pipecat), never
with voicegate's code; it is not a package of this environment.
"""
