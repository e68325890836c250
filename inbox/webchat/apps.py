from django.apps import AppConfig


class WebchatConfig(AppConfig):
    name = "inbox.webchat"
    label = "webchat"
