"""podium's protobuf API: the .proto files and their generated Python modules."""
