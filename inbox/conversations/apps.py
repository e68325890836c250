from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "inbox.conversations"
    label = "conversations"
