"""Door controllers' configuration on the devices: read it, diff it against the firmware file
(badge_bridge/firmware: profiles and validation), push it."""
