//! The broker: RabbitMQ topology, consuming, publishing with confirms, delay queues and dead
//! letters ([`amqp`]), and topic matching ([`topic`]).

pub mod amqp;
pub mod dead_letters;
pub mod publish;
pub mod topic;
