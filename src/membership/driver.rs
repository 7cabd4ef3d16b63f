//! The membership driver: a tokio task that runs the sans-IO [`Membership`] against the group
//! coordinator.
//!
//! Owns the coordinator connection (bootstrap → FindCoordinator → connect, found again after
//! `CoordinatorChanged` or a transport failure), the heartbeat version negotiated on the first
//! connection, and the timing: it waits in one `select!` on the heartbeat in flight (bounded by
//! the connection's per-request timeout), `sleep_until` the machine's next deadline, and
//! commands from the runtime. What to send and when is the machine's: at the broker's interval,
//! at once on join, acknowledgement and leave, and with the full state after an error.
//!
//! The runtime holds a [`DriverHandle`] and receives every [`MembershipEvent`] on a channel.
//! Dropping the handle leaves the group (bounded by [`LEAVE_TIMEOUT`]); the task stops after
//! `Left` or `Fatal`. Dropping the event receiver also leaves: nobody would act on a `Revoke`.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::{
    FailureKind, MemberState, Membership, MembershipConfig, MembershipError, MembershipEvent,
    TaskId, LEAVE_TIMEOUT,
};
use crate::protocol::{
    BrokerConnection, ConnectionConfig, ProtocolError, StreamsGroupHeartbeatRequest,
    StreamsGroupHeartbeatResponse,
};

/// Events buffered for a runtime that is slow to drain them; the driver waits beyond that.
const EVENT_CAPACITY: usize = 256;
/// First delay before finding the coordinator again after a failed attempt.
const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Upper bound of the doubling reconnect delay.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What [`MembershipDriver::spawn`] needs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub bootstrap: String,
    /// Settings of every connection the driver opens.
    pub connection: ConnectionConfig,
    /// Who the member is and what it declares.
    pub membership: MembershipConfig,
}

/// What the driver publishes on its `watch` after every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverStatus {
    /// The member id (fixed for the driver's lifetime).
    pub member_id: String,
    /// The member epoch, for OffsetCommit (0 while joining, -1 once left).
    pub member_epoch: i32,
    /// The machine's state.
    pub state: MemberState,
    /// The StreamsGroupHeartbeat version negotiated on the first connection.
    pub heartbeat_version: Option<i16>,
    /// The coordinator's address while connected.
    pub coordinator: Option<String>,
    /// Join heartbeats (epoch 0) sent so far: 1 after the first join, one more per rejoin.
    pub joins: u64,
    /// Whether the driver task has stopped (after `Left` or `Fatal`).
    pub stopped: bool,
}

/// How [`DriverHandle::leave`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// The member left: the leave heartbeat was answered or failed, or the machine's
    /// [`LEAVE_TIMEOUT`] passed.
    Left,
    /// The caller's bound passed first; the driver goes on leaving in the background.
    TimedOut,
    /// The driver had already stopped (left, fatal or aborted).
    NotRunning,
}

#[derive(Debug)]
enum Command {
    TasksRevoked(BTreeSet<TaskId>),
    Rejoin,
    Leave(oneshot::Sender<()>),
    Pause,
    Resume,
}

/// The runtime's side of a running driver.
#[derive(Debug)]
pub struct DriverHandle {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<DriverStatus>,
    task: JoinHandle<()>,
}

impl DriverHandle {
    /// Tells the member that the runtime committed and closed these revoked tasks.
    pub fn tasks_revoked(&self, tasks: BTreeSet<TaskId>) {
        let _ = self.commands.send(Command::TasksRevoked(tasks));
    }

    /// Tells the member that the runtime lost all its tasks on its own (a refused commit, an
    /// aborted transaction): it rejoins owning nothing, so the group reassigns them at once.
    pub fn rejoin(&self) {
        let _ = self.commands.send(Command::Rejoin);
    }

    /// `(member_id, member_epoch)` as of the latest step, for OffsetCommit.
    pub fn member(&self) -> (String, i32) {
        let status = self.status.borrow();
        (status.member_id.clone(), status.member_epoch)
    }

    /// The latest published status.
    pub fn status(&self) -> DriverStatus {
        self.status.borrow().clone()
    }

    /// A receiver of every status the driver publishes.
    pub fn watch(&self) -> watch::Receiver<DriverStatus> {
        self.status.clone()
    }

    /// Leaves the group (the runtime has committed and closed its tasks) and waits at most
    /// `timeout` for the machine to report `Left`.
    pub async fn leave(&self, timeout: Duration) -> LeaveOutcome {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_err() {
            return LeaveOutcome::NotRunning;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => LeaveOutcome::Left,
            Ok(Err(_)) => LeaveOutcome::NotRunning,
            Err(_) => LeaveOutcome::TimedOut,
        }
    }

    /// Simulates a dead member (tests): stops the task and drops its connection without
    /// leaving; the broker removes the member after its session timeout.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Stops sending heartbeats (one in flight is still answered) until [`resume`](Self::resume).
    pub fn pause(&self) {
        let _ = self.commands.send(Command::Pause);
    }

    /// Sends heartbeats again after [`pause`](Self::pause).
    pub fn resume(&self) {
        let _ = self.commands.send(Command::Resume);
    }

    /// Whether the driver task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Runs a [`Membership`] on a tokio task.
pub struct MembershipDriver;

impl MembershipDriver {
    /// Starts the driver; it joins at once. Must be called within a tokio runtime.
    pub fn spawn(config: DriverConfig) -> (DriverHandle, mpsc::Receiver<MembershipEvent>) {
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let (status_tx, status_rx) = watch::channel(DriverStatus {
            member_id: config.membership.member_id.clone(),
            member_epoch: 0,
            state: MemberState::Joining,
            heartbeat_version: None,
            coordinator: None,
            joins: 0,
            stopped: false,
        });
        let driver = Driver {
            member_id: config.membership.member_id.clone(),
            group_id: config.membership.group_id.clone(),
            bootstrap: config
                .bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            connection: config.connection,
            membership_config: Some(config.membership),
            machine: None,
            link: Link::Down {
                retry_at: Instant::now(),
            },
            reconnect_backoff: RECONNECT_BACKOFF_INITIAL,
            commands: command_rx,
            commands_open: true,
            events: event_tx,
            events_open: true,
            status: status_tx,
            paused: false,
            leave_deadline: None,
            leave_waiters: Vec::new(),
            joins: 0,
            last_epoch: 0,
        };
        let task = tokio::spawn(driver.run());
        let handle = DriverHandle {
            commands: command_tx,
            status: status_rx,
            task,
        };
        (handle, event_rx)
    }
}

type Exchange = Pin<
    Box<
        dyn Future<
                Output = (
                    BrokerConnection,
                    Result<StreamsGroupHeartbeatResponse, ProtocolError>,
                ),
            > + Send,
    >,
>;
type Discovery = Pin<Box<dyn Future<Output = Result<BrokerConnection, ProtocolError>> + Send>>;

/// The coordinator connection and what it is doing.
enum Link {
    /// Connected, nothing in flight.
    Idle(Box<BrokerConnection>),
    /// A heartbeat in flight; the connection comes back with its answer.
    Busy(Exchange),
    /// Finding the coordinator and connecting to it.
    Connecting(Discovery),
    /// Not connected; find the coordinator at `retry_at`.
    Down { retry_at: Instant },
}

/// What ended a wait. Moved once per loop turn, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Answered(
        BrokerConnection,
        Result<StreamsGroupHeartbeatResponse, ProtocolError>,
    ),
    Connected(Result<BrokerConnection, ProtocolError>),
    Timer,
    Command(Option<Command>),
}

struct Driver {
    member_id: String,
    group_id: String,
    bootstrap: Vec<String>,
    connection: ConnectionConfig,
    /// Taken when the machine is built, on the first connection (it needs the version).
    membership_config: Option<MembershipConfig>,
    machine: Option<Membership>,
    link: Link,
    reconnect_backoff: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    events: mpsc::Sender<MembershipEvent>,
    events_open: bool,
    status: watch::Sender<DriverStatus>,
    paused: bool,
    /// Mirrors the machine's leave deadline, to wake while no connection is usable.
    leave_deadline: Option<Instant>,
    leave_waiters: Vec<oneshot::Sender<()>>,
    joins: u64,
    last_epoch: i32,
}

impl Driver {
    async fn run(mut self) {
        loop {
            if !self.step(Instant::now()).await {
                break;
            }
            let wake_at = self.wake_at();
            let commands_open = self.commands_open;
            let link = &mut self.link;
            let commands = &mut self.commands;
            let wake = tokio::select! {
                wake = poll_link(link) => wake,
                () = sleep_until(wake_at) => Wake::Timer,
                command = commands.recv(), if commands_open => Wake::Command(command),
            };
            self.handle_wake(Instant::now(), wake);
        }
        self.status.send_modify(|s| s.stopped = true);
        debug!(member_id = %self.member_id(), "membership driver stopped");
    }

    fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Forwards events, publishes the status, starts a heartbeat or a discovery when due.
    /// Returns false once the driver must stop.
    async fn step(&mut self, now: Instant) -> bool {
        let (mut stop, mut left) = (false, false);
        if let Some(machine) = self.machine.as_mut() {
            machine.handle_timeout(now);
        }
        while let Some(event) = self.machine.as_mut().and_then(Membership::poll_event) {
            left |= event == MembershipEvent::Left;
            stop |= matches!(event, MembershipEvent::Left | MembershipEvent::Fatal(_));
            self.on_event(&event);
            if self.events.send(event).await.is_err() && self.events_open {
                warn!(member_id = %self.member_id(), "membership event receiver dropped; leaving the group");
                self.events_open = false;
                self.leave(now);
            }
        }
        self.publish();
        if stop {
            // After `Fatal` the waiters are dropped: `leave` reports `NotRunning`.
            for waiter in self.leave_waiters.drain(..).filter(|_| left) {
                let _ = waiter.send(());
            }
            return false;
        }
        self.maybe_send(now);
        if let Link::Down { retry_at } = self.link {
            if now >= retry_at {
                self.link = Link::Connecting(discover(
                    self.bootstrap.clone(),
                    self.group_id.clone(),
                    self.connection.clone(),
                ));
            }
        }
        true
    }

    fn maybe_send(&mut self, now: Instant) {
        let Some(machine) = self.machine.as_mut() else {
            return;
        };
        let sendable = !self.paused || machine.state() == MemberState::Leaving;
        if !sendable || !matches!(self.link, Link::Idle(_)) {
            return;
        }
        let Some(request) = machine.poll_request(now) else {
            return;
        };
        if request.member_epoch == 0 {
            self.joins += 1;
        }
        debug!(member_id = %request.member_id, epoch = request.member_epoch, "sending streams group heartbeat");
        let Link::Idle(conn) = std::mem::replace(&mut self.link, Link::Down { retry_at: now })
        else {
            unreachable!("checked above");
        };
        self.link = Link::Busy(exchange(*conn, request));
    }

    /// When to wake without a response or command. Only a usable connection lets the
    /// machine's deadline wake the loop (a due heartbeat cannot be sent otherwise).
    fn wake_at(&self) -> Option<Instant> {
        let machine_deadline = self.machine.as_ref().and_then(Membership::next_deadline);
        match &self.link {
            Link::Busy(_) => machine_deadline,
            Link::Idle(_) if !self.paused => machine_deadline,
            Link::Down { retry_at } => Some(
                self.leave_deadline
                    .map_or(*retry_at, |leave| leave.min(*retry_at)),
            ),
            Link::Idle(_) | Link::Connecting(_) => self.leave_deadline,
        }
    }

    fn handle_wake(&mut self, now: Instant, wake: Wake) {
        match wake {
            Wake::Answered(conn, Ok(response)) => {
                self.link = Link::Idle(Box::new(conn));
                if let Some(machine) = self.machine.as_mut() {
                    machine.handle_response(now, response);
                }
            }
            Wake::Answered(_, Err(e)) => {
                let kind = match e {
                    ProtocolError::Timeout { .. } => FailureKind::Timeout,
                    _ => FailureKind::Transport,
                };
                warn!(member_id = %self.member_id(), error = &e as &dyn std::error::Error, "streams group heartbeat failed; finding the coordinator again");
                self.link = Link::Down { retry_at: now };
                if let Some(machine) = self.machine.as_mut() {
                    machine.handle_failure(now, kind);
                }
            }
            Wake::Connected(Ok(conn)) => self.connected(conn),
            Wake::Connected(Err(e)) => {
                warn!(member_id = %self.member_id(), error = &e as &dyn std::error::Error, retry_in = ?self.reconnect_backoff, "cannot reach the group coordinator");
                self.link = Link::Down {
                    retry_at: now + self.reconnect_backoff,
                };
                self.reconnect_backoff = (self.reconnect_backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
            Wake::Timer => {}
            Wake::Command(Some(command)) => self.command(now, command),
            Wake::Command(None) => {
                debug!(member_id = %self.member_id(), "driver handle dropped; leaving the group");
                self.commands_open = false;
                self.leave(now);
            }
        }
    }

    fn connected(&mut self, conn: BrokerConnection) {
        self.reconnect_backoff = RECONNECT_BACKOFF_INITIAL;
        if self.machine.is_none() {
            let Some(config) = self.membership_config.take() else {
                return;
            };
            match conn.heartbeat_version() {
                Ok(version) => {
                    info!(member_id = %config.member_id, group = %config.group_id, coordinator = conn.addr(), heartbeat_version = version, "joining streams group");
                    self.status
                        .send_modify(|s| s.heartbeat_version = Some(version));
                    self.machine = Some(Membership::new(config, version));
                }
                Err(e) => {
                    // No common StreamsGroupHeartbeat version: nothing will ever work.
                    let mut machine = Membership::new(config, 0);
                    machine.fail(MembershipError::Broker {
                        error: ResponseError::UnsupportedVersion,
                        message: Some(e.to_string()),
                    });
                    self.machine = Some(machine);
                }
            }
        } else {
            info!(member_id = %self.member_id(), coordinator = conn.addr(), "connected to the group coordinator");
        }
        self.status
            .send_modify(|s| s.coordinator = Some(conn.addr().to_string()));
        self.link = Link::Idle(Box::new(conn));
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::TasksRevoked(tasks) => {
                info!(member_id = %self.member_id(), tasks = %task_list(&tasks), "tasks revoked by the runtime");
                if let Some(machine) = self.machine.as_mut() {
                    machine.tasks_revoked(now, &tasks);
                }
            }
            Command::Rejoin => {
                if let Some(machine) = self.machine.as_mut() {
                    machine.rejoin(now);
                }
            }
            Command::Leave(waiter) => {
                self.leave_waiters.push(waiter);
                self.leave(now);
            }
            Command::Pause => {
                info!(member_id = %self.member_id(), "heartbeats paused");
                self.paused = true;
            }
            Command::Resume => {
                info!(member_id = %self.member_id(), "heartbeats resumed");
                self.paused = false;
            }
        }
    }

    fn leave(&mut self, now: Instant) {
        info!(member_id = %self.member_id(), "leaving the streams group");
        self.paused = false;
        if self.leave_deadline.is_none() {
            self.leave_deadline = Some(now + LEAVE_TIMEOUT);
        }
        if self.machine.is_none() {
            // Never connected: a machine that has sent nothing leaves at once (`Left`).
            self.machine = self
                .membership_config
                .take()
                .map(|config| Membership::new(config, 0));
        }
        if let Some(machine) = self.machine.as_mut() {
            machine.leave(now);
        }
    }

    fn on_event(&mut self, event: &MembershipEvent) {
        let Some(machine) = self.machine.as_ref() else {
            return;
        };
        let (member_id, epoch) = (machine.member_id(), machine.member_epoch());
        match event {
            MembershipEvent::Assigned { active, standby } => {
                info!(%member_id, epoch, active = %task_list(active), standby = %task_list(standby), "tasks assigned");
            }
            MembershipEvent::Revoke { tasks } => {
                info!(%member_id, epoch, tasks = %task_list(tasks), "tasks to revoke");
            }
            MembershipEvent::Lost => warn!(%member_id, "member fenced: all tasks lost; rejoining"),
            MembershipEvent::NotReady { statuses } => {
                let statuses: Vec<String> = statuses
                    .iter()
                    .map(|s| format!("{:?}: {}", s.status_code, s.status_detail))
                    .collect();
                info!(%member_id, epoch, ?statuses, "streams group not ready");
            }
            MembershipEvent::Ready => info!(%member_id, epoch, "streams group ready"),
            MembershipEvent::CoordinatorChanged => {
                info!(%member_id, "group coordinator changed; finding it again");
                if matches!(self.link, Link::Idle(_)) {
                    self.link = Link::Down {
                        retry_at: Instant::now(),
                    };
                }
            }
            MembershipEvent::Warning(e) => {
                warn!(%member_id, error = e as &dyn std::error::Error, "streams group warning")
            }
            MembershipEvent::Fatal(e) => {
                error!(%member_id, error = e as &dyn std::error::Error, "streams group membership failed")
            }
            MembershipEvent::Left => info!(%member_id, "left the streams group"),
        }
    }

    fn publish(&mut self) {
        let Some(machine) = self.machine.as_ref() else {
            return;
        };
        let (epoch, state, joins) = (machine.member_epoch(), machine.state(), self.joins);
        if epoch != self.last_epoch {
            info!(member_id = %machine.member_id(), epoch, previous = self.last_epoch, "member epoch changed");
            self.last_epoch = epoch;
        }
        self.status.send_if_modified(|s| {
            let changed = (s.member_epoch, s.state, s.joins) != (epoch, state, joins);
            (s.member_epoch, s.state, s.joins) = (epoch, state, joins);
            changed
        });
    }
}

async fn poll_link(link: &mut Link) -> Wake {
    match link {
        Link::Busy(exchange) => {
            let (conn, result) = exchange.await;
            Wake::Answered(conn, result)
        }
        Link::Connecting(discovery) => Wake::Connected(discovery.await),
        Link::Idle(_) | Link::Down { .. } => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn exchange(mut conn: BrokerConnection, request: StreamsGroupHeartbeatRequest) -> Exchange {
    Box::pin(async move {
        let result = conn.heartbeat(&request).await;
        (conn, result)
    })
}

/// Finds the coordinator of `group` through each bootstrap broker in turn and connects to it.
fn discover(bootstrap: Vec<String>, group: String, config: ConnectionConfig) -> Discovery {
    Box::pin(async move {
        let mut last = ProtocolError::NotConnected {
            addr: bootstrap.join(","),
        };
        for addr in &bootstrap {
            let found = async {
                let mut conn = BrokerConnection::connect(addr.clone(), config.clone()).await?;
                let coordinator = conn.find_coordinator(&group).await?;
                if coordinator.addr() == conn.addr() {
                    return Ok(conn);
                }
                BrokerConnection::connect(coordinator.addr(), config.clone()).await
            };
            match found.await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    debug!(bootstrap = %addr, error = &e as &dyn std::error::Error, "finding the group coordinator failed");
                    last = e;
                }
            }
        }
        Err(last)
    })
}

fn task_list(tasks: &BTreeSet<TaskId>) -> String {
    let names: Vec<String> = tasks.iter().map(ToString::to_string).collect();
    format!("[{}]", names.join(","))
}
