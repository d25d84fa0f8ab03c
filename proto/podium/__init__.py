"""podium.* protobuf packages."""
