// Package chat lets players talk: in a Rally room's channel, in named
// groups and in direct conversations between two players. It stores every
// message, edit, delete and presence change as an event in one JetStream
// stream, so history survives restarts and any node serves it, and it
// delivers those events live to each node's subscribers.
package chat
