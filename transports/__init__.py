"""Transports: how audio gets in and out of a call (local, WebRTC, SIP/RTP, carrier media streams, MQTT)."""
