"""RTP for G.711 calls: packets, RFC 4733 digits, the jitter buffer, a symmetric UDP session."""

from transports.rtp.jitter import JitterBuffer
from transports.rtp.session import RtpSession

__all__ = ["JitterBuffer", "RtpSession"]
