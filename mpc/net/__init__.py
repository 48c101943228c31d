"""Channels between parties: the interface, in-process queues, ZeroMQ."""
from mpc.net.channel import Channel, InProcessChannel, InProcessHub, TrafficStats

__all__ = ["Channel", "InProcessChannel", "InProcessHub", "TrafficStats"]
