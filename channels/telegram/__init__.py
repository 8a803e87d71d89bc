"""Telegram: inbound webhook (secret token header), outbound Bot API through python-telegram-bot."""
