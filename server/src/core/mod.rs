//! The reservation core (lock-free stock and buyer set).
