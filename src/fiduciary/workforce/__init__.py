"""Workforce compliance: the training catalogue and its gate, the speak-up channel, access
review campaigns and the HR sync of joiners, movers and leavers."""
