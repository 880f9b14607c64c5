"""Mailbox providers: the recipient domain group of an address (gmail, outlook, yahoo, other).

Gmail, Microsoft (Outlook.com, Hotmail, Live, MSN) and Yahoo (with AOL, which runs on Yahoo's
mail platform) each enforce their own bulk-sender rules and count complaints on their own:
Gmail wants a spam-complaint rate under 0.1 % and starts refusing at 0.3 %. ``digest``
counts SMTP replies, computes complaint and hard-bounce rates and pauses sending per group
(:mod:`digest.reputation`), so a problem with one provider never stops mail to the others.

A domain is in a provider's group when it is one of the provider's own domains, or when its
first label is the provider's brand and at most two labels follow (``hotmail.co.uk``,
``yahoo.co.jp``, ``outlook.com.au``): the country domains, without downloading a list.
Addresses are compared by the domain after their last ``@``, lower-cased; a domain in IDNA
form (:func:`digest.addresses.normalize_email`) is what the state store holds.

Pure and cheap (a dict lookup per call after the first), so the sending process can label
every SMTP reply with it.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache


class DomainGroup(StrEnum):
    """A recipient's mailbox provider, as far as sender rules go; compares equal to its string."""

    GMAIL = "gmail"
    """Gmail: gmail.com, googlemail.com."""
    OUTLOOK = "outlook"
    """Microsoft's consumer mail: outlook.*, hotmail.*, live.*, msn.com."""
    YAHOO = "yahoo"
    """Yahoo Mail and AOL (one platform, one set of sender rules): yahoo.*, ymail.com,
    rocketmail.com, aol.com."""
    OTHER = "other"
    """Every other domain (universities, companies, smaller providers)."""


PROVIDER_DOMAINS: dict[str, DomainGroup] = {
    "gmail.com": DomainGroup.GMAIL,
    "googlemail.com": DomainGroup.GMAIL,
    "msn.com": DomainGroup.OUTLOOK,
    "ymail.com": DomainGroup.YAHOO,
    "rocketmail.com": DomainGroup.YAHOO,
    "aol.com": DomainGroup.YAHOO,
}
"""Domains that belong to a provider by name."""

PROVIDER_BRANDS: dict[str, DomainGroup] = {
    "outlook": DomainGroup.OUTLOOK,
    "hotmail": DomainGroup.OUTLOOK,
    "live": DomainGroup.OUTLOOK,
    "yahoo": DomainGroup.YAHOO,
}
"""First labels of a provider's country domains (``hotmail.fr``, ``yahoo.co.uk``)."""

MAX_COUNTRY_LABELS = 2
"""Labels a brand's country domain has after the brand (``co.uk``, ``com.au``: 2)."""

MAX_SHOWN_CHARS = 40
"""Characters of an unknown group name an error message quotes."""

GROUPS: tuple[DomainGroup, ...] = tuple(DomainGroup)
"""Every group, in a fixed order (for reports and metrics)."""


def domain_group(address: str) -> DomainGroup:
    """The provider group of ``address`` (an email address, or a bare domain).

    Args:
        address: ``ada@gmail.com``; the part after the last ``@`` is the domain (the whole
            text when there is none), compared lower-cased without a trailing dot.

    Returns:
        The group; :attr:`DomainGroup.OTHER` for any domain not listed.
    """
    return _group_of(address.rpartition("@")[2])


@lru_cache(maxsize=4096)
def _group_of(domain: str) -> DomainGroup:
    domain = domain.strip().rstrip(".").lower()
    known = PROVIDER_DOMAINS.get(domain)
    if known is not None:
        return known
    brand, _, rest = domain.partition(".")
    group = PROVIDER_BRANDS.get(brand)
    if group is not None and rest and rest.count(".") < MAX_COUNTRY_LABELS:
        return group
    return DomainGroup.OTHER


def parse_group(text: str) -> DomainGroup:
    """The group named ``text`` (case and surrounding blanks ignored).

    Raises:
        ValueError: ``text`` names no group; the message lists them.
    """
    name = text.strip().lower()
    try:
        return DomainGroup(name)
    except ValueError:
        names = ", ".join(GROUPS)
        shown = text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"
        raise ValueError(f"{shown!r} is not a domain group: use one of {names}") from None
