from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "inbox.agents"
    label = "agents"
