"""The `header` plugin: set or clear the aa, ra and rd flags of queries and responses.

    header {
        response set ra          # SELECTOR (query | response) ACTION (set | clear) FLAGS...
        response clear aa rd
        query set rd             # what the plugins after it (forward) see
        set ra                   # no selector: a response rule (older CoreDNS syntax)
    }

Rules apply in the order written (the last one wins). It runs where CoreDNS's plugin.cfg puts it:
after `cache` (so the cache keeps the rewritten answer) and before the plugins that answer.

RA: CoreDNS sets no RA on its own answers (kubernetes, multicluster, hosts, lighthouse, its
errors), so a client asking with RD sees "recursion requested but not available" unless
`header { response set ra }` is configured; a forwarded answer keeps the upstream's flags. The
lab DNS does the same (query.response never sets RA)."""

from __future__ import annotations

from dataclasses import dataclass

import dns.flags
import dns.message

from crossnet.providers.lab.dns.query import Next, Query

HEADER_FLAGS = {"aa": dns.flags.AA, "ra": dns.flags.RA, "rd": dns.flags.RD}
HEADER_SELECTORS = ("query", "response")
HEADER_ACTIONS = ("set", "clear")


@dataclass(frozen=True)
class HeaderRule:
    selector: str  # query | response
    action: str  # set | clear
    flags: int

    def apply(self, flags: int) -> int:
        return flags | self.flags if self.action == "set" else flags & ~self.flags


class HeaderPlugin:
    def __init__(self, rules: tuple[HeaderRule, ...]) -> None:
        self.query_rules = tuple(rule for rule in rules if rule.selector == "query")
        self.response_rules = tuple(rule for rule in rules if rule.selector == "response")

    async def serve(self, query: Query, next_plugin: Next) -> dns.message.Message:
        for rule in self.query_rules:
            query.request.flags = rule.apply(query.request.flags)
        reply = await next_plugin(query)
        for rule in self.response_rules:
            reply.flags = rule.apply(reply.flags)
        return reply
