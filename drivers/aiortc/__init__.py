"""The real WebRTC driver (aiortc) and the signaling server."""
