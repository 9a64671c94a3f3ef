"""The Agent API v2 "Conversations": typed models and the httpx client."""
