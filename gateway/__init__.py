"""The riverseal edge gateway: sources, the signed Merkle log, checkpoints, anchors."""
