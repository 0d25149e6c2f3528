"""Slack adapters: request signatures checked with slack_sdk's SignatureVerifier, and
replies sent with its AsyncWebhookClient (response_url) and AsyncWebClient (chat.postMessage)."""
