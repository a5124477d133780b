"""Actors. ``rollout``: on-device (Anakin) rollouts scanned inside the compiled step."""
