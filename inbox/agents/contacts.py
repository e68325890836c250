"""Contact pages: the list with search, a contact (identities per channel, conversations, merge history), and the
merge / undo form actions (POST, then redirect back; CSRF applies).

A contact the user cannot see answers 404, like one that does not exist (the rule: contact_selectors.py).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from inbox.agents.contact_selectors import (
    CONTACTS_PAGE_SIZE,
    CONVERSATIONS_SHOWN,
    contact_conversations,
    contact_detail,
    contact_merged_into,
    contact_merges,
    contact_search,
    contact_visible,
    merge_candidates,
    merge_visible,
)
from inbox.agents.selectors import role_of
from inbox.conversations.services.contacts import ContactMergeRefused, contact_merge, contact_unmerge

NAV = "contacts"


@login_required
@require_GET
def contact_list(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:200]
    paginator = Paginator(contact_search(user=request.user, q=q), CONTACTS_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "agents/contact_list.html", {"nav": NAV, "q": q, "page_obj": page})


@login_required
@require_GET
def contact_page(request: HttpRequest, contact_id: int) -> HttpResponse:
    contact = contact_detail(user=request.user, contact_id=contact_id)
    if contact is None:
        raise Http404("no such contact")
    merge_q = request.GET.get("merge_q", "").strip()[:200]
    conversations = list(contact_conversations(user=request.user, contact=contact))
    context = {
        "nav": NAV,
        "contact": contact,
        "conversations": conversations,
        "conversations_capped": len(conversations) >= CONVERSATIONS_SHOWN,
        "merges": list(contact_merges(contact=contact)),
        "merged_into": contact_merged_into(contact=contact),
        "merge_q": merge_q,
        "candidates": merge_candidates(user=request.user, contact=contact, q=merge_q),
        "sees_everything": role_of(request.user).is_manager,
    }
    return render(request, "agents/contact_detail.html", context)


@login_required
@require_POST
def contact_merge_action(request: HttpRequest, contact_id: int) -> HttpResponse:
    """Merge the contact named in the form (``source``) into this one."""
    target = contact_visible(user=request.user, contact_id=contact_id)
    source_id = request.POST.get("source", "")
    source = contact_visible(user=request.user, contact_id=int(source_id)) if source_id.isdigit() else None
    if target is None or source is None:
        raise Http404("no such contact")
    try:
        merge = contact_merge(target=target, source=source, actor=request.user)
    except ContactMergeRefused as exc:
        messages.error(request, f"Not merged: {exc}.")
    else:
        moved = f"{len(merge.identity_ids)} identities and {len(merge.conversation_ids)} conversations"
        messages.success(request, f"Merged {merge.source_name or f'contact #{source.pk}'} into this contact ({moved}).")
    return redirect("contact", target.pk)


@login_required
@require_POST
def contact_unmerge_action(request: HttpRequest, merge_id: int) -> HttpResponse:
    merge = merge_visible(user=request.user, merge_id=merge_id)
    if merge is None:
        raise Http404("no such merge")
    try:
        contact_unmerge(merge=merge, actor=request.user)
    except ContactMergeRefused as exc:
        messages.error(request, f"Not undone: {exc}.")
    else:
        messages.success(
            request, f"Merge undone: {merge.source_name or f'contact #{merge.source_id}'} is separate again."
        )
    # Back to the page the button was on (either side of the merge); the kept contact otherwise.
    back = request.POST.get("back", "")
    sides = {merge.target_id, merge.source_id}
    return redirect("contact", int(back) if back.isdigit() and int(back) in sides else merge.target_id)
