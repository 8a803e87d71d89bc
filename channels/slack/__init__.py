"""Slack: Events API and interactivity (signed requests), outbound Web API through slack_sdk."""
