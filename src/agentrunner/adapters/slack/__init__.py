"""Slack adapters (signature checks, replies through response_url / chat.postMessage):
planned, see the issues. The slack role (8005) serves health and docs today."""
