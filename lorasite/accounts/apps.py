from __future__ import annotations

from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_save

from lorasite.realtime import announce_access_change


def _user_saved(sender, instance, **kwargs) -> None:
    # A deactivated account's open sockets close within moments (the admin's "active" checkbox).
    if not instance.is_active:
        user_id = instance.pk
        transaction.on_commit(lambda: announce_access_change(user_id))


class AccountsConfig(AppConfig):
    name = "lorasite.accounts"
    label = "accounts"
    verbose_name = "Teams and access"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="lorasite-user-access")
