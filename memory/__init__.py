"""Long-term episodic memory: episodes, the durable SQLite + FAISS store, query answering."""
