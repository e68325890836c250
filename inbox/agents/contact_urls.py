"""Contact pages (owned by inbox/agents/contacts.py), mounted under /contacts/."""

from __future__ import annotations

from django.urls import URLPattern, path

from inbox.agents import contacts

urlpatterns: list[URLPattern] = [
    path("", contacts.contact_list, name="contacts"),
    path("<int:contact_id>/", contacts.contact_page, name="contact"),
    path("<int:contact_id>/merge/", contacts.contact_merge_action, name="contact-merge"),
    path("merges/<int:merge_id>/undo/", contacts.contact_unmerge_action, name="contact-unmerge"),
]
