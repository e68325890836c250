from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "inbox.routing"
    label = "routing"
