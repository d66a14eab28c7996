//! The init's event loop: one thread, one `poll(2)` over the control pipe, a SIGCHLD signalfd and
//! the pipes of running children. It reaps every process of the sandbox (it is pid 1 there), enforces
//! timeouts and output caps, and exits, killing everything, when the agent closes the control pipe.

mod child;
mod fileops;
mod sys;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use child::{Child, SIDE, STDERR, STDOUT};

use crate::protocol::{self, Event, FrameDecoder, Request, SpawnErrorKind};

/// Stop reading children's output while this many bytes wait to be written to the agent.
const HIGH_WATER: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// What a slot of the poll set refers to.
#[derive(Clone, Copy)]
enum Slot {
    CtlIn,
    CtlOut,
    Sigchld,
    Stdin(usize),
    Output(usize, usize),
}

struct Init {
    ctl_in: Option<OwnedFd>,
    ctl_out: OwnedFd,
    sigfd: OwnedFd,
    decoder: FrameDecoder,
    outq: Vec<u8>,
    out_pos: usize,
    children: Vec<Child>,
    buf: Vec<u8>,
    pollfds: Vec<libc::pollfd>,
    slots: Vec<Slot>,
}

/// Runs the init until the agent goes away. Errors are fatal (protocol violations, broken setup).
pub fn run() -> io::Result<()> {
    sys::close_inherited_fds();
    sys::harden_process()?;
    let ctl_in = sys::take_fd(0)?;
    let ctl_out = sys::take_fd(1)?;
    let sigfd = sys::sigchld_fd()?;
    let mut init = Init {
        ctl_in: Some(ctl_in),
        ctl_out,
        sigfd,
        decoder: FrameDecoder::default(),
        outq: Vec::new(),
        out_pos: 0,
        children: Vec::new(),
        buf: vec![0; READ_CHUNK],
        pollfds: Vec::new(),
        slots: Vec::new(),
    };
    init.send(&Event::Ready)?;
    let result = init.run_loop();
    init.kill_everything();
    result
}

impl Init {
    fn run_loop(&mut self) -> io::Result<()> {
        while self.ctl_in.is_some() {
            let now = Instant::now();
            for c in &mut self.children {
                c.check_timeout(now);
            }
            self.finish_children(now)?;
            if !self.flush()? {
                return Ok(());
            }
            let timeout = self.poll_timeout(now);
            self.build_poll_set();
            sys::poll(&mut self.pollfds, timeout)?;
            for i in 0..self.pollfds.len() {
                if self.pollfds[i].revents != 0 {
                    self.dispatch(self.slots[i])?;
                }
            }
        }
        Ok(())
    }

    fn build_poll_set(&mut self) {
        self.pollfds.clear();
        self.slots.clear();
        let mut add = |fd: &OwnedFd, events: libc::c_short, slot: Slot| {
            self.pollfds.push(libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 });
            self.slots.push(slot);
        };
        if let Some(fd) = &self.ctl_in {
            add(fd, libc::POLLIN, Slot::CtlIn);
        }
        let pending = self.outq.len() - self.out_pos;
        if pending > 0 {
            add(&self.ctl_out, libc::POLLOUT, Slot::CtlOut);
        }
        add(&self.sigfd, libc::POLLIN, Slot::Sigchld);
        for (i, c) in self.children.iter().enumerate() {
            if let Some(fd) = c.stdin_fd() {
                add(fd, libc::POLLOUT, Slot::Stdin(i));
            }
            for stream in [STDOUT, STDERR, SIDE] {
                if let Some(fd) = c.out_fd(stream).filter(|_| pending < HIGH_WATER) {
                    add(fd, libc::POLLIN, Slot::Output(i, stream));
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> i32 {
        match self.children.iter().filter_map(Child::next_wake).min() {
            None => -1,
            Some(at) => at.saturating_duration_since(now).as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        }
    }

    fn dispatch(&mut self, slot: Slot) -> io::Result<()> {
        match slot {
            Slot::CtlIn => self.read_requests(),
            Slot::CtlOut => self.flush().map(|_| ()),
            Slot::Sigchld => {
                sys::drain_signalfd(self.sigfd.as_fd());
                while let Some((pid, code, signal)) = sys::reap_any() {
                    if let Some(c) = self.children.iter_mut().find(|c| c.pid == pid) {
                        c.on_exit(code, signal);
                    }
                }
                Ok(())
            }
            Slot::Stdin(i) => {
                self.children[i].feed_stdin();
                Ok(())
            }
            Slot::Output(i, stream) => {
                let mut events = Vec::new();
                self.children[i].read_output(stream, &mut self.buf, &mut events);
                events.iter().try_for_each(|e| self.send(e))
            }
        }
    }

    fn read_requests(&mut self) -> io::Result<()> {
        let Some(fd) = &self.ctl_in else { return Ok(()) };
        match sys::read(fd.as_fd(), &mut self.buf) {
            Ok(0) => self.ctl_in = None,
            Ok(n) => self.decoder.push(&self.buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if let Some(nonce) = self.decoder.take_resync() {
            self.outq.extend_from_slice(&protocol::resync_marker(nonce));
        }
        while let Some(req) = self.decoder.next_frame::<Request>().map_err(io::Error::other)? {
            match req {
                Request::Spawn(spawn) => self.spawn(spawn)?,
                Request::Kill { id } => {
                    if let Some(c) = self.children.iter().find(|c| c.id == id) {
                        child::kill_tree(c.pid);
                    }
                }
                Request::Signal { id, signal } => {
                    if let Some(c) = self.children.iter().find(|c| c.id == id && c.is_running()) {
                        sys::signal(-c.pid, signal);
                    }
                }
                Request::File { id, op } => self.send(&fileops::handle(id, op))?,
            }
        }
        Ok(())
    }

    fn spawn(&mut self, req: protocol::SpawnRequest) -> io::Result<()> {
        let id = req.id;
        if self.children.iter().any(|c| c.id == id) {
            let error = format!("exec {id} is already running");
            return self.send(&Event::SpawnFailed { id, kind: SpawnErrorKind::BadRequest, error });
        }
        match child::spawn(req) {
            Ok(c) => {
                let pid = c.pid as u32;
                self.children.push(c);
                self.send(&Event::Started { id, pid })
            }
            Err((kind, error)) => self.send(&Event::SpawnFailed { id, kind, error }),
        }
    }

    /// Reports and forgets children that exited and whose output is drained.
    fn finish_children(&mut self, now: Instant) -> io::Result<()> {
        let mut i = 0;
        while i < self.children.len() {
            match self.children[i].finished(now) {
                Some(event) => {
                    self.children.swap_remove(i);
                    self.send(&event)?;
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    /// Queues an event and writes what the pipe takes right away.
    fn send(&mut self, event: &Event) -> io::Result<()> {
        let frame = protocol::encode(event).map_err(io::Error::other)?;
        self.outq.extend_from_slice(&frame);
        self.flush().map(|_| ())
    }

    /// Writes queued events without blocking; `Ok(false)` when the agent is gone.
    fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.outq.len() {
            match sys::write(self.ctl_out.as_fd(), &self.outq[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.ctl_in = None;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.outq.len() {
            self.outq.clear();
            self.out_pos = 0;
            if self.outq.capacity() > HIGH_WATER * 2 {
                self.outq = Vec::new();
            }
        } else if self.out_pos > HIGH_WATER {
            self.outq.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(true)
    }

    /// Kills every process of the sandbox; as pid 1, our own exit would do it too.
    fn kill_everything(&mut self) {
        for c in &self.children {
            child::kill_tree(c.pid);
        }
        if std::process::id() == 1 {
            sys::sigkill(-1);
        }
    }
}
