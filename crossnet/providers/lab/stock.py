"""The Corefile kubeadm writes and kind keeps: what every lab cluster's DNS starts from."""

from __future__ import annotations

__all__ = ["stock_corefile"]


def stock_corefile(domain: str) -> str:
    """The Corefile kubeadm writes and kind keeps, with the cluster's own domain."""
    return f""".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success {domain}
       disable denial {domain}
    }}
    loop
    reload
    loadbalance
}}
"""
