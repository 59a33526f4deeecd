"""The wire between the engine and its clients: MessagePack only; importing it loads no part of the core."""
