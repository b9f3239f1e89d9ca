"""A local AgentCom-compatible hub (poll model), for tests, demos and single-machine use.

Imported only by the `agentcom hub` commands and the demo.
"""
