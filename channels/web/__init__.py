"""The built-in web console: login-protected pages, buttons and a chat box on the same router."""
