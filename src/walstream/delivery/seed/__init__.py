"""The seed contract plugin.PluginService/Session: one JSON event per message."""
