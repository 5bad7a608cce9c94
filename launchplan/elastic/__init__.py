"""Elastic, self-healing services: the controller behind `cei watch`, `cei scale`, `cei repair`.

Policies (policies.py) and health verdicts (health.py) are pure functions; heartbeats.py reads
the nodes' monitors; controller.py compares what is with what the store says should be and
acts only through the level engine's node launcher and teardown.
"""
