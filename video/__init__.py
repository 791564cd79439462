"""p2p.video: capture, the live window, and the p2p-live / p2p-video / p2p-translate programs (torch-free)."""
