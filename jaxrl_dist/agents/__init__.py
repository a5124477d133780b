"""Agents: each has a validated config and a learner with one compiled update step."""
